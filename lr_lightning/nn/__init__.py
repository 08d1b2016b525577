"""Architectures as plain ``torch.nn.Module`` classes (no Lightning import).

Methods receive these through dependency injection (``class_path`` in a config), so any
``nn.Module`` with the same call signature can be swapped in without touching method code.
"""

from lr_lightning.nn.bagnet import PatchBagNet
from lr_lightning.nn.conv4 import Conv4
from lr_lightning.nn.resnet_cifar import CifarResNet, resnet8, resnet20, resnet32, resnet56
from lr_lightning.nn.rrdb import RRDBNet
from lr_lightning.nn.timm_backbone import TimmClassifier
from lr_lightning.nn.weights import load_module_weights, load_state_dict_file
from lr_lightning.nn.zssr import ZSSR8

__all__ = [
    "CifarResNet",
    "Conv4",
    "PatchBagNet",
    "RRDBNet",
    "TimmClassifier",
    "ZSSR8",
    "load_module_weights",
    "load_state_dict_file",
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet56",
]
