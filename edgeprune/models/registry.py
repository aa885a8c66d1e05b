"""The zoo registry, declared without torch so ``edgeprune models`` lists it fast.

Each zoo model is registered in ``zoo.py`` (``@MODELS.register``); the declarations here name the module and
the one-line description (tests check both against ``zoo.py``).
"""

from edgeprune.registry import Registry

MODELS: Registry = Registry("model")

_ZOO = "edgeprune.models.zoo"
for _name, _doc in (
    ("mlp", "Tabular multilayer perceptron (any input is flattened)."),
    ("lenet5", "LeNet-5 (two 5x5 convs, three linear layers), padded so it takes 8x8 and larger images."),
    ("vgg11", "VGG-11 with BatchNorm, CIFAR-style classifier."),
    ("vgg16", "VGG-16 with BatchNorm, CIFAR-style classifier."),
    ("resnet18", "ResNet-18, CIFAR stem (3x3 conv, no max-pool), 11.2M parameters."),
    ("resnet20", "ResNet-20 (He et al. CIFAR, widths 16-32-64), 0.27M parameters."),
    ("resnet56", "ResNet-56 (He et al. CIFAR, widths 16-32-64), 0.86M parameters."),
    ("mobilenetv2", "MobileNetV2, CIFAR strides: depthwise convs and inverted residuals."),
):
    MODELS.declare(_name, _ZOO, doc=_doc)
