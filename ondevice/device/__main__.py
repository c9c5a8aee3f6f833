"""`python -m ondevice.device BUNDLE_DIR --threads N` (profile a bundle) or `python -m ondevice.device predict
MODEL.onnx FRAMES.npy` (classify frames with an `rfml export`)."""

import sys

if sys.argv[1:2] == ["predict"]:
    from ondevice.device.predict import main

    sys.exit(main(sys.argv[2:]))

from ondevice.device.runner import main

sys.exit(main())
