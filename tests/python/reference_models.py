"""Python reference models for the parity tests.

The backbone is the real torchvision ResNet from Debian's python3-torchvision. ClassBlock and
ft_net follow the Python Market-1501 baseline.
"""
import torch
import torch.nn as nn
import torchvision


class ClassBlock(nn.Module):
    def __init__(self, input_dim, class_num, droprate, relu=False, bnorm=True, linear=512,
                 return_f=False):
        super().__init__()
        self.return_f = return_f
        layers = []
        width = input_dim
        if linear > 0:
            layers.append(nn.Linear(input_dim, linear))
            width = linear
        if bnorm:
            layers.append(nn.BatchNorm1d(width))
        if relu:
            layers.append(nn.LeakyReLU(0.1))
        if droprate > 0:
            layers.append(nn.Dropout(p=droprate))
        self.add_block = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(width, class_num))

    def forward(self, x):
        f = self.add_block(x)
        logits = self.classifier(f)
        return [logits, f] if self.return_f else logits


def set_last_stride(resnet, stride):
    """The baseline's stride=1 trick: layer4[0]'s strided conv (conv2 in a Bottleneck,
    conv1 in a BasicBlock) and its downsample conv."""
    block = resnet.layer4[0]
    strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


class FtNet(nn.Module):
    def __init__(self, class_num=751, droprate=0.5, stride=2, linear_num=512, return_f=False):
        super().__init__()
        model = torchvision.models.resnet50()
        set_last_stride(model, stride)
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model = model
        self.classifier = ClassBlock(2048, class_num, droprate, linear=linear_num,
                                     return_f=return_f)

    def features(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        x = m.avgpool(x)
        return x.view(x.size(0), x.size(1))

    def embed(self, x):
        return self.classifier.add_block(self.features(x))

    def forward(self, x):
        return self.classifier(self.features(x))


def resnet(depth, num_classes=1000, last_stride=2):
    model = getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes)
    set_last_stride(model, last_stride)
    return model


def randomize_batchnorm_statistics(module, generator):
    """Non-trivial running statistics and affine parameters, so that eval-mode parity
    exercises every BatchNorm term."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
