"""The one canonical face-parsing class table, each parser's index mapping, and region groups.

Canonical classes are the 19 CelebAMask-HQ classes in the order facer's FaRL ``farl/celebm/448`` model
emits them, so FaRL output needs no reordering, plus one documented union (id 19, :data:`UNIONS`):
``person_other``, the person pixels a face mesh + person segmentation (the ``mesh`` parser) can tell from
the background but not from each other: hair, ears, hat, neck, cloth and jewellery outside the face mesh. Every left/right name is the SUBJECT's side: in a frontal
photo the subject's right eye is on the image's left (dlib landmarks 36-41).

Value :data:`NOT_LABELLED` (255) marks pixels a parser cannot tell (e.g. hair for the landmark parser);
it is never merged into ``background``.

Sources of the parser orders (read, not copied):

* facer ``farl/celebm/448``: ``pretrain_settings['celebm/448']['label_names']`` in
  ``facer/face_parsing/farl.py`` (FacePerceiver/facer): ``background, neck, face, cloth, rr, lr, rb, lb,
  re, le, nose, imouth, llip, ulip, hair, eyeg, hat, earr, neck_l``. FaRL's CelebAMask-HQ loader builds
  these labels from the dataset's mask files in the order ``neck, skin, cloth, l_ear, r_ear, l_brow,
  r_brow, l_eye, r_eye, nose, mouth, l_lip, u_lip, hair, eye_g, hat, ear_r, neck_l``: CelebAMask-HQ's
  ``l_eye`` becomes facer's ``re``. FaRL renames LaPa's "left eyebrow" to ``rb`` the same way. We read
  this as: the datasets name sides as the viewer sees them (``l_`` = image left), facer names them by
  the subject (``r`` = subject's right = image left). Either way CelebAMask-HQ ``l_eye`` and facer ``re``
  are the same physical eye, which is all the mapping needs.
* BiSeNet / face-parsing.PyTorch (zllrunning): ``0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye,
  5 r_eye, 6 eye_g, 7 l_ear, 8 r_ear, 9 ear_r, 10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l,
  16 cloth, 17 hair, 18 hat`` (the ``atts`` list of its data preparation, quoted by the author in issue
  #12). Names are CelebAMask-HQ's raw (image-side) names, so ``l_eye`` = subject's right eye. Note the
  lips: BiSeNet 12 = upper lip, 13 = lower lip; facer 12 = lower lip, 13 = upper lip.
"""

from __future__ import annotations

import numpy as np

from leam.errors import LeamError

NOT_LABELLED = 255
NOT_LABELLED_NAME = "not_labelled"

CLASSES: tuple[str, ...] = (
    "background",   # 0
    "neck",         # 1
    "skin",         # 2  face skin (facer: face)
    "cloth",        # 3
    "right_ear",    # 4  subject's right
    "left_ear",     # 5
    "right_brow",   # 6
    "left_brow",    # 7
    "right_eye",    # 8
    "left_eye",     # 9
    "nose",         # 10
    "inner_mouth",  # 11
    "lower_lip",    # 12
    "upper_lip",    # 13
    "hair",         # 14
    "eyeglasses",   # 15
    "hat",          # 16
    "earring",      # 17
    "necklace",     # 18
    "person_other", # 19 union: person pixels outside the face mesh (see UNIONS)
)
UNIONS: dict[str, tuple[str, ...]] = {
    "person_other": ("hair", "right_ear", "left_ear", "hat", "neck", "cloth", "earring", "necklace", "eyeglasses"),
}
"""Union classes -> the CelebAMask-HQ classes they merge (a parser that labels a union cannot tell its members)."""
CLASS_ID: dict[str, int] = {name: index for index, name in enumerate(CLASSES)}
NUM_CLASSES = len(CLASSES)

# Label names as each parser publishes them, in its output index order.
FARL_CELEBM_NAMES: tuple[str, ...] = (
    "background", "neck", "face", "cloth", "rr", "lr", "rb", "lb", "re", "le", "nose", "imouth",
    "llip", "ulip", "hair", "eyeg", "hat", "earr", "neck_l")
BISENET_NAMES: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")

# Parser name -> canonical class (subject's side, see module docstring).
_FARL_TO_CANONICAL_NAME = {
    "background": "background", "neck": "neck", "face": "skin", "cloth": "cloth",
    "rr": "right_ear", "lr": "left_ear", "rb": "right_brow", "lb": "left_brow",
    "re": "right_eye", "le": "left_eye", "nose": "nose", "imouth": "inner_mouth",
    "llip": "lower_lip", "ulip": "upper_lip", "hair": "hair", "eyeg": "eyeglasses", "hat": "hat",
    "earr": "earring", "neck_l": "necklace"}
_BISENET_TO_CANONICAL_NAME = {
    "background": "background", "skin": "skin",
    "l_brow": "right_brow", "r_brow": "left_brow",   # image-side names: l_ = subject's right
    "l_eye": "right_eye", "r_eye": "left_eye",
    "eye_g": "eyeglasses", "l_ear": "right_ear", "r_ear": "left_ear", "ear_r": "earring",
    "nose": "nose", "mouth": "inner_mouth", "u_lip": "upper_lip", "l_lip": "lower_lip",
    "neck": "neck", "neck_l": "necklace", "cloth": "cloth", "hair": "hair", "hat": "hat"}

PARSER_NAMES: dict[str, tuple[str, ...]] = {"farl_celebm": FARL_CELEBM_NAMES, "bisenet": BISENET_NAMES}
_PARSER_TO_CANONICAL_NAME = {"farl_celebm": _FARL_TO_CANONICAL_NAME, "bisenet": _BISENET_TO_CANONICAL_NAME}

# Region groups used by the correlation tables; every canonical class belongs to exactly one region.
REGIONS: dict[str, tuple[str, ...]] = {
    "eyes": ("right_eye", "left_eye"),
    "brows": ("right_brow", "left_brow"),
    "nose": ("nose",),
    "mouth": ("inner_mouth", "lower_lip", "upper_lip"),
    "skin": ("skin",),
    "hair": ("hair",),
    "ears": ("right_ear", "left_ear"),
    "background": ("background",),
    "other": ("neck", "cloth", "eyeglasses", "hat", "earring", "necklace", "person_other"),
}
REGION_OF_CLASS: dict[str, str] = {cls: region for region, members in REGIONS.items() for cls in members}

# Display colours (RGB) for overlays; not-labelled pixels are left uncoloured.
PALETTE = np.array([
    [0, 0, 0], [255, 153, 51], [204, 0, 0], [0, 153, 153], [102, 51, 0], [153, 102, 51],
    [255, 204, 0], [204, 204, 0], [51, 51, 255], [0, 153, 255], [76, 153, 0], [255, 0, 255],
    [153, 0, 76], [255, 102, 178], [102, 51, 153], [204, 204, 204], [0, 102, 0], [255, 255, 153],
    [0, 255, 204], [120, 90, 160]], dtype=np.uint8)


def parser_to_canonical(parser: str) -> np.ndarray:
    """Lookup table (256,) uint8: parser output index -> canonical id; unused entries are 255."""
    if parser not in PARSER_NAMES:
        raise LeamError(f"unknown parser label order {parser!r}; choose one of: {', '.join(PARSER_NAMES)}")
    table = np.full(256, NOT_LABELLED, dtype=np.uint8)
    names = _PARSER_TO_CANONICAL_NAME[parser]
    for index, name in enumerate(PARSER_NAMES[parser]):
        table[index] = CLASS_ID[names[name]]
    return table


def canonical_to_parser(parser: str) -> np.ndarray:
    """Inverse lookup (256,) uint8: canonical id -> parser output index (255 stays 255)."""
    forward = parser_to_canonical(parser)
    inverse = np.full(256, NOT_LABELLED, dtype=np.uint8)
    known = np.flatnonzero(forward != NOT_LABELLED)
    inverse[forward[known]] = known
    return inverse


def map_to_canonical(labels: np.ndarray, parser: str) -> np.ndarray:
    """Map a parser's integer labels (any shape) to canonical ids.

    An index the parser does not define is a LeamError that names the bad ids: a model with a different
    head (e.g. LaPa's 11 classes loaded as CelebAMask-HQ) must fail loudly, not be relabelled silently.
    """
    labels = np.asarray(labels)
    count = len(PARSER_NAMES.get(parser, ()))
    bad = np.unique(labels[(labels < 0) | (labels >= max(count, 1))]) if labels.size else np.array([])
    table = parser_to_canonical(parser)
    if bad.size:
        raise LeamError(f"parser {parser!r} output has unknown class ids {bad[:10].tolist()}; "
                        f"it defines ids 0..{count - 1}")
    return table[labels.astype(np.int64)]


def check_canonical(labels: np.ndarray) -> np.ndarray:
    """Ids in ``labels`` that are neither canonical classes nor NOT_LABELLED (empty when all are valid)."""
    values = np.unique(np.asarray(labels))
    return values[(values >= NUM_CLASSES) & (values != NOT_LABELLED)]


def class_table(available: list[str] | tuple[str, ...], backend: str) -> dict:
    """The ``classes.json`` document: every class, its region, and which ones this backend produces."""
    unknown = [name for name in available if name not in CLASS_ID]
    if unknown:
        raise LeamError(f"unknown class name(s) {unknown}; valid: {', '.join(CLASSES)}")
    return {
        "backend": backend,
        "not_labelled": NOT_LABELLED,
        "classes": [{"id": index, "name": name, "region": REGION_OF_CLASS[name],
                     "available": name in available} for index, name in enumerate(CLASSES)],
        "available": [name for name in CLASSES if name in available],
        "not_available": [name for name in CLASSES if name not in available],
        "regions": {region: list(members) for region, members in REGIONS.items()},
        "unions": {union: list(members) for union, members in UNIONS.items()},
        "side_convention": "subject (right_eye = subject's right eye = image left in a frontal photo)",
    }
