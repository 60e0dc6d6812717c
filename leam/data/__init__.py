"""The face subset: manifest, seeded selection, fetching (mirror / download / folder) and the faces outputs."""

from leam.data.fetch import FaceJob, FetchOutcome, FetchSettings
from leam.data.manifest import INDEX_COLUMNS, SAMPLE_COLUMNS, read_sample_manifest, select_subset
from leam.data.sources import SOURCES, FacesResult, collect_faces, resolve_mirror, write_outputs

__all__ = ["FaceJob", "FetchOutcome", "FetchSettings", "INDEX_COLUMNS", "SAMPLE_COLUMNS", "SOURCES", "FacesResult",
           "collect_faces", "read_sample_manifest", "resolve_mirror", "select_subset", "write_outputs"]
