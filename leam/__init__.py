"""leam: Layer Embedding Activation Mapping for face-recognition networks.

One module per job: data and alignment (``leam.data``, ``leam.align``, ``leam.frame``), models
(``leam.models``), the LEAM maps (``leam.core``), face parsing (``leam.parsing``), analysis metrics
(``leam.metrics``), occlusion validation (``leam.occlusion``) and HTML reports (``leam.report``).
"""

__version__ = "0.1.0"
