"""PoseHRNet: the frozen 2D feature extractor (HRNet, Sun et al., CVPR 2019).

The module tree mirrors the released ``pose_hrnet_w32_256x192.pth`` so that its
state dict loads name for name. ``final_layer``, the file's heatmap head (17
COCO keypoints), is built only on request (``heatmap_joints=17``): lifting
needs the feature maps alone, and only inference on a user's own images uses
the heatmaps, to find the 2D keypoints.

Layout for a 256x192 input and width w (w = 32 or 48 for the released files):
stem (two 3x3 stride-2 convs, 64 channels) -> layer1 (4 Bottlenecks, 256
channels) -> stage 2 (1 module, 2 branches) -> stage 3 (4 modules, 3 branches)
-> stage 4 (3 modules, 4 branches; the last outputs only the high-resolution
branch). Branch widths are (w, 2w, 4w, 8w) at strides (4, 8, 16, 32).
"""
from torch import nn

BN_MOMENTUM = 0.1


def _conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN with an identity shortcut; channels unchanged."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.bn1 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs, expanding ``planes`` to ``4 * planes`` channels."""

    expansion = 4

    def __init__(self, in_channels, planes):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _conv_bn(in_channels, out_channels, stride, relu):
    layers = [_conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by an all-to-all fusion.

    Args:
        channels: width of each branch, highest resolution first.
        num_blocks: BasicBlocks per branch.
        multi_scale_output: if False only the highest-resolution branch is
            fused and returned (the last module of the network).
    """

    def __init__(self, channels, num_blocks=4, multi_scale_output=True):
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c) for _ in range(num_blocks)]) for c in channels
        )
        num_outputs = self.num_branches if multi_scale_output else 1
        self.fuse_layers = nn.ModuleList()
        for i in range(num_outputs):
            fuse = nn.ModuleList()
            for j in range(self.num_branches):
                if j > i:
                    # Lower resolution: project channels, then upsample by 2^(j-i).
                    fuse.append(nn.Sequential(
                        nn.Conv2d(channels[j], channels[i], kernel_size=1, bias=False),
                        nn.BatchNorm2d(channels[i], momentum=BN_MOMENTUM),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    fuse.append(nn.Identity())
                else:
                    # Higher resolution: (i - j) stride-2 convs, ReLU between them but not after the last.
                    steps = i - j
                    fuse.append(nn.Sequential(*[
                        _conv_bn(channels[j], channels[i] if k == steps - 1 else channels[j], 2, relu=k < steps - 1)
                        for k in range(steps)
                    ]))
            self.fuse_layers.append(fuse)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs):
        return self.fuse(self.run_branches(xs))

    def run_branches(self, xs):
        """Each branch's BasicBlocks on its own input; list of the same shapes."""
        return [branch(x) for branch, x in zip(self.branches, xs)]

    def fuse(self, xs):
        """Sum every branch into each output resolution, then ReLU."""
        outputs = []
        for fuse in self.fuse_layers:
            y = fuse[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + fuse[j](xs[j])
            outputs.append(self.relu(y))
        return outputs


class PoseHRNet(nn.Module):
    """HRNet pose backbone returning the four maps the context blocks sample.

    Args:
        width: channels of the highest-resolution branch (32 for W32, 48 for
            W48); the branches have (w, 2w, 4w, 8w) channels. Smaller widths
            build a shrunk network for quick experiments.
        stem_width: channels of the stem convolutions and of layer1's
            Bottlenecks (which output 4x as many); 64 in every released file.
            On a CPU the stem and layer1 cost most of a narrow network's time,
            so quick experiments may shrink them too.

    forward(images (B, 3, 256, 192), ImageNet-normalized RGB) returns a list of
    four maps: the stage-4 output (B, w, 64, 48) and, for branches 1-3, the
    outputs of the BasicBlocks of stage 4's first module before its fusion,
    (B, 2w, 32, 24), (B, 4w, 16, 12), (B, 8w, 8, 6), which is what the original
    network returns (see ``forward``).
    Other input sizes divisible by 32 work and scale the maps accordingly.

    heatmap_joints: 0 (default) builds no heatmap head; 17 builds HRNet's
        ``final_layer`` (a 1x1 conv on the stage-4 output), which
        :meth:`heatmaps` applies to the first feature map: (B, 17, 64, 48) for
        the 17 COCO keypoints of the released file.

    The backbone is meant to be frozen: ``freeze()`` turns gradients off and
    pins the module in eval mode (BatchNorm uses its running statistics even
    when a caller switches everything to ``train()``).
    """

    def __init__(self, width=32, stem_width=64, heatmap_joints=0):
        super().__init__()
        if width < 1:
            raise ValueError(f"PoseHRNet width must be a positive integer (32 or 48 for released files), got {width}")
        if stem_width < 1:
            raise ValueError(f"PoseHRNet stem_width must be a positive integer (64 for released files), got {stem_width}")
        self.width = width
        self.stem_width = s = stem_width
        channels = [width * 2 ** i for i in range(4)]
        self.feature_channels = tuple(channels)
        self._frozen = False

        self.conv1 = nn.Conv2d(3, s, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(s, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(s, s, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(s, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Bottleneck(s, s), *[Bottleneck(4 * s, s) for _ in range(3)])

        self.transition1 = self._transition([4 * s], channels[:2])
        self.stage2 = nn.ModuleList([HighResolutionModule(channels[:2])])
        self.transition2 = self._transition(channels[:2], channels[:3])
        self.stage3 = nn.ModuleList([HighResolutionModule(channels[:3]) for _ in range(4)])
        self.transition3 = self._transition(channels[:3], channels)
        self.stage4 = nn.ModuleList(
            [HighResolutionModule(channels, multi_scale_output=i < 2) for i in range(3)]
        )
        # Built last, so that the layers above draw the same random initial weights with or without it.
        self.final_layer = nn.Conv2d(width, heatmap_joints, kernel_size=1) if heatmap_joints else None

    @staticmethod
    def _transition(previous, current):
        """Per new branch: a channel change (same resolution) or a stride-2 step from the lowest branch.

        Branches whose width is unchanged pass through (``None``), as in the
        released layout, where such entries hold no tensors.
        """
        layers = nn.ModuleList()
        for i, c in enumerate(current):
            if i < len(previous):
                layers.append(_conv_bn(previous[i], c, 1, relu=True) if previous[i] != c else None)
            else:
                layers.append(nn.Sequential(_conv_bn(previous[-1], c, 2, relu=True)))
        return layers

    @staticmethod
    def _apply_transition(transition, xs):
        # New branches start from the lowest-resolution branch of the previous stage.
        return [xs[i] if t is None else t(xs[i] if i < len(xs) else xs[-1])
                for i, t in enumerate(transition)]

    def forward(self, images):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PoseHRNet expects images (B, 3, H, W), got {tuple(images.shape)}")
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)

        xs = self._apply_transition(self.transition1, [x])
        for module in self.stage2:
            xs = module(xs)
        xs = self._apply_transition(self.transition2, xs)
        for module in self.stage3:
            xs = module(xs)
        xs = self._apply_transition(self.transition3, xs)
        # The original network reads branches 1-3 from the list it handed to
        # stage 4, which the first module overwrote in place with its branch
        # outputs: so the lower-resolution maps are stage 4's first module's
        # branch outputs, before fusion. The released weights were trained on these.
        branch_outputs = self.stage4[0].run_branches(xs)
        xs = self.stage4[0].fuse(branch_outputs)
        for module in self.stage4[1:]:
            xs = module(xs)
        return [xs[0]] + branch_outputs[1:]

    def heatmaps(self, features):
        """Keypoint heatmaps (B, J, 64, 48) from the maps ``forward`` returned (uses the first one)."""
        if self.final_layer is None:
            raise RuntimeError("this PoseHRNet has no heatmap head: build it with heatmap_joints=17")
        return self.final_layer(features[0])

    def freeze(self):
        """Turn gradients off and keep the module in eval mode from now on; returns self."""
        self.requires_grad_(False)
        self._frozen = True
        return self.eval()

    def train(self, mode=True):
        return super().train(mode and not self._frozen)
