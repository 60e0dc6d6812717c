"""Face-recognition networks as frozen PyTorch modules, one file per family, found through ``registry``.

- ``dlib_format``: reader of dlib's serialised ``.dat`` networks;
- ``dlib_resnet``: dlib's 128-d face-recognition ResNet rebuilt from that file (registered as ``dlib_resnet``);
- ``verification``: embeddings of aligned frames and same/different-identity verification metrics.
"""
