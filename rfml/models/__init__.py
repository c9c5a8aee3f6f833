"""AMR models for ``[B, 2, L]`` I/Q frames, one file per family, built by name through one registry.

    from rfml.models import create
    model = create("clst", num_classes=11, length=128)

Names: ``clst`` (the teacher), ``kd_cnn`` and ``kd_mobilenet`` (its students), and the baselines ``vtcnn2``,
``resnet``, ``cldnn``, ``mcldnn`` and ``lstm2``; for 2.4 GHz ISM-band interference identification (Zhang et al.,
SPAWC 2019) ``ism_cnn``, ``ism_resnet``, ``ism_cldnn`` and ``ism_lstm``. Every model returns logits
``[B, num_classes]`` and names in ``hint_layer`` the submodule whose output is its last feature map (for
feature-hint distillation).
"""

# Importing each family registers its models.
from rfml.models import cldnn, clst, ism, lstm, resnet, snr_cnn, students, vtcnn2  # noqa: F401
from rfml.models.clst import ClST
from rfml.models.registry import available, create, get, register
from rfml.models.students import KDCNN, KDMobileNet

__all__ = ["KDCNN", "ClST", "KDMobileNet", "available", "create", "get", "register"]
