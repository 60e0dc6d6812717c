"""Pure-Python reader of dlib's serialised DNN files (``*.dat`` written by ``dlib::serialize(net)``).

Why: the face-recognition ResNet ships only as dlib's own binary format; reading it here lets us rebuild
the network in PyTorch (gradients, hooks) without dlib or C++ at conversion time.

Encodings (checked by ``tests/test_dlib_format.py`` against the real file):

- integer: one control byte (low 7 bits = number of payload bytes, ``0x80`` = negative), then the
  absolute value, little-endian;
- string: integer length, then the bytes; boolean: ASCII ``'0'``/``'1'``;
- float scalar: integer mantissa, integer exponent, value = mantissa * 2**exponent;
- tensor: integer version (2), integers num_samples, k, nr, nc, then raw little-endian float32 values;
- alias tensor (a view into a layer's parameter tensor): integer version (1), num_samples, k, nr, nc.

Layout of a network: the loss layer (version, name, details), then the version of every wrapper layer from
the outermost in (``add_layer`` 2, tags/skips 1, the ``add_layer`` over the input 3), then the input layer,
then every computational layer bottom-up: its details followed by its training state (three booleans and
three tensors; the input-side ``add_layer`` adds its sample-expansion factor). Tags, skips and the skip
topology are not stored: they come from the C++ network type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leam.errors import LeamError

ADD_LAYER_VERSION = 2
INPUT_ADD_LAYER_VERSION = 3
TAG_OR_SKIP_VERSION = 1


class DlibFormatError(LeamError):
    """The bytes are not a dlib network this reader understands (one-line message with the byte offset)."""


@dataclass
class DlibLayer:
    """One computational layer as stored: its kind (e.g. ``con_4``), scalar attributes and parameters."""

    kind: str
    attrs: dict = field(default_factory=dict)
    params: np.ndarray | None = None
    """Flat float32 parameter vector exactly as dlib stores it (layout depends on ``kind``)."""


@dataclass
class DlibNetwork:
    loss_kind: str
    loss_attrs: dict
    input_kind: str
    input_attrs: dict
    wrapper_versions: list[int]
    """Wrapper versions, outermost first: 2 = add_layer, 1 = tag/skip, 3 = add_layer over the input."""
    layers: list[DlibLayer]
    """Computational layers bottom-up (input side first)."""


class DlibReader:
    """Sequential decoder over a bytes buffer; every read checks bounds and reports the offset on failure."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, count: int, what: str) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise DlibFormatError(f"dlib file truncated: need {count} byte(s) for {what} at byte {self.pos}, "
                                  f"file has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def read_int(self, what: str = "integer") -> int:
        control = self._take(1, what)[0]
        size = control & 0x7F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} for {what} at byte {self.pos - 1}")
        value = int.from_bytes(bytes(self._take(size, what)), "little")
        return -value if control & 0x80 else value

    def read_float(self, what: str = "float") -> float:
        mantissa = self.read_int(what)
        exponent = self.read_int(what)
        return float(np.ldexp(np.float64(mantissa), exponent))

    def read_string(self, what: str = "string") -> str:
        length = self.read_int(what)
        raw = bytes(self._take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"non-ASCII {what} at byte {self.pos - length}") from None

    def read_bool(self, what: str = "boolean") -> bool:
        char = bytes(self._take(1, what))
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad boolean {char!r} for {what} at byte {self.pos - 1}")
        return char == b"1"

    def read_tensor(self, what: str = "tensor") -> np.ndarray:
        """A stored tensor as float32 array of shape (num_samples, k, nr, nc)."""
        start = self.pos
        version = self.read_int(what)
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version} for {what} at byte {start}")
        shape = tuple(self.read_int(what) for _ in range(4))
        if min(shape) < 0:
            raise DlibFormatError(f"negative tensor shape {shape} for {what} at byte {start}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count, what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias_shape(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        start = self.pos
        version = self.read_int(what)
        if version != 1:
            raise DlibFormatError(f"unsupported alias-tensor version {version} for {what} at byte {start}")
        return tuple(self.read_int(what) for _ in range(4))  # type: ignore[return-value]


# --- layer details, one reader per stored kind ------------------------------------------------------

def _read_con(r: DlibReader) -> DlibLayer:
    params = r.read_tensor("con_4 params")
    attrs = {key: r.read_int(f"con_4 {key}") for key in
             ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
    attrs["filters_shape"] = r.read_alias_shape("con_4 filters")
    attrs["biases_shape"] = r.read_alias_shape("con_4 biases")
    for key in ("learning_rate_multiplier", "weight_decay_multiplier",
                "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        attrs[key] = r.read_float(f"con_4 {key}")
    return DlibLayer("con_4", attrs, params.reshape(-1))


def _read_affine(r: DlibReader) -> DlibLayer:
    params = r.read_tensor("affine_ params")
    attrs = {"gamma_shape": r.read_alias_shape("affine_ gamma"), "beta_shape": r.read_alias_shape("affine_ beta"),
             "mode": r.read_int("affine_ mode")}
    return DlibLayer("affine_", attrs, params.reshape(-1))


def _read_pool(kind: str):
    def read(r: DlibReader) -> DlibLayer:
        attrs = {key: r.read_int(f"{kind} {key}") for key in
                 ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        return DlibLayer(kind, attrs)
    return read


def _read_fc(r: DlibReader) -> DlibLayer:
    attrs = {"num_outputs": r.read_int("fc_2 num_outputs"), "num_inputs": r.read_int("fc_2 num_inputs")}
    params = r.read_tensor("fc_2 params")
    attrs["weights_shape"] = r.read_alias_shape("fc_2 weights")
    attrs["biases_shape"] = r.read_alias_shape("fc_2 biases")
    attrs["bias_mode"] = r.read_int("fc_2 bias_mode")
    for key in ("learning_rate_multiplier", "weight_decay_multiplier",
                "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        attrs[key] = r.read_float(f"fc_2 {key}")
    return DlibLayer("fc_2", attrs, params.reshape(-1))


LAYER_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r: DlibLayer("relu_"),
    "max_pool_2": _read_pool("max_pool_2"),
    "avg_pool_2": _read_pool("avg_pool_2"),
    "add_prev_": lambda r: DlibLayer("add_prev_"),
    "fc_2": _read_fc,
}


def _read_input(r: DlibReader) -> tuple[str, dict]:
    kind = r.read_string("input layer name")
    if kind != "input_rgb_image_sized":
        raise DlibFormatError(f"unsupported input layer {kind!r}; this reader knows: input_rgb_image_sized")
    attrs = {"mean_rgb": tuple(r.read_float("input channel mean") for _ in range(3)),
             "nr": r.read_int("input rows"), "nc": r.read_int("input columns")}
    return kind, attrs


def _read_training_state(r: DlibReader, kind: str) -> None:
    """Skip what ``add_layer`` stores after the details: three flags and three (usually empty) tensors."""
    for _ in range(3):
        r.read_bool(f"{kind} state flag")
    for _ in range(3):
        r.read_tensor(f"{kind} state tensor")


def read_network(data: bytes) -> DlibNetwork:
    """Decode a whole serialised ``loss_metric`` network (as ``dlib_face_recognition_resnet_model_v1.dat``)."""
    r = DlibReader(data)
    loss_version = r.read_int("loss wrapper version")
    if loss_version != 1:
        raise DlibFormatError(f"unsupported loss wrapper version {loss_version} at byte 0")
    loss_kind = r.read_string("loss layer name")
    if loss_kind != "loss_metric_2":
        raise DlibFormatError(f"unsupported loss layer {loss_kind!r}; this reader knows: loss_metric_2")
    loss_attrs = {"margin": r.read_float("loss margin"), "distance_threshold": r.read_float("loss threshold")}

    versions: list[int] = []
    while True:
        version = r.read_int("wrapper version")
        if version not in (ADD_LAYER_VERSION, TAG_OR_SKIP_VERSION, INPUT_ADD_LAYER_VERSION):
            raise DlibFormatError(f"unexpected wrapper version {version} at byte {r.pos}")
        versions.append(version)
        if version == INPUT_ADD_LAYER_VERSION:
            break
    input_kind, input_attrs = _read_input(r)

    layers: list[DlibLayer] = []
    for index in range(versions.count(ADD_LAYER_VERSION) + 1):
        start = r.pos
        kind = r.read_string("layer name")
        if kind not in LAYER_READERS:
            raise DlibFormatError(f"unknown layer kind {kind!r} at byte {start}; known: {', '.join(LAYER_READERS)}")
        layers.append(LAYER_READERS[kind](r))
        _read_training_state(r, kind)
        if index == 0:
            input_attrs["sample_expansion_factor"] = r.read_int("sample expansion factor")
    if r.pos != len(r.data):
        raise DlibFormatError(f"{len(r.data) - r.pos} unexpected trailing byte(s) after the last layer")
    return DlibNetwork(loss_kind, loss_attrs, input_kind, input_attrs, versions, layers)


def load_network(path: str | Path) -> DlibNetwork:
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"dlib network file not found: {path}")
    return read_network(path.read_bytes())
