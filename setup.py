"""Packaging: the distribution ``detsegbox``: the core, imported as ``toolbox``, and the first-party
plugins, installed as ``toolbox_plugins``.

The distribution name is our own (``toolbox`` on the package index is an unrelated project);
the import name ``toolbox`` and the entry-point group ``toolbox.plugins`` are unchanged.

The first-party plugins are found by the core through the ``toolbox.plugins`` entry-point group,
exactly as third-party plugin packages are (see ``examples/toolbox-plugin-example``).
"""
from setuptools import find_packages, setup

core_packages = find_packages(include=['toolbox', 'toolbox.*'])
plugin_packages = ['toolbox_plugins'] + [
    'toolbox_plugins.' + p[len('plugins.'):] for p in find_packages(include=['plugins.*'])]

setup(
    name='detsegbox',  # keep toolbox.plugins.DISTRIBUTION equal to it
    version='0.1.0',
    description='Plugin-based object detection and semantic segmentation toolbox',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=core_packages + plugin_packages,
    package_dir={'toolbox_plugins': 'plugins'},
    install_requires=[
        'torch>=2.4',
        'torchvision>=0.19',
        'mmengine>=0.10.5,<0.11',
        'mmcv-lite>=2.1,<2.3',
        'numpy',
        'scipy>=1.10',
        'pycocotools>=2.0.7',
        'faster-coco-eval>=1.6',
        'albumentations>=2.0,<=2.0.8',
        'opencv-python>=4.8',
        'opencv-python-headless>=4.8',
        'matplotlib>=3.7',
    ],
    extras_require={
        'tests': ['pytest>=8', 'timm>=1.0', 'transformers>=4.45', 'monai>=1.3', 'einops',
                  'nibabel>=5'],
        'medical': ['nibabel>=5'],
    },
    # One entry point per component module: a module whose optional dependency is missing is
    # reported by the plugin loader and disables nothing else.
    entry_points={
        'toolbox.plugins': [
            'backbones.resnet = toolbox_plugins.backbones.resnet',
            'backbones.refinedet_resnet = toolbox_plugins.backbones.refinedet_resnet',
            'backbones.spinenet = toolbox_plugins.backbones.spinenet',
            'backbones.swin = toolbox_plugins.backbones.swin',
            'backbones.vgg = toolbox_plugins.backbones.vgg',
            'backbones.vovnet = toolbox_plugins.backbones.vovnet',
            'backbones.xception = toolbox_plugins.backbones.xception',
            'backbones.vit = toolbox_plugins.backbones.vit',
            'backbones.unet = toolbox_plugins.backbones.unet',
            'necks.fpn = toolbox_plugins.necks.fpn',
            'necks.tcb = toolbox_plugins.necks.tcb',
            'necks.asff = toolbox_plugins.necks.asff',
            'necks.channel_mapper = toolbox_plugins.necks.channel_mapper',
            'dense_heads.retina_head = toolbox_plugins.dense_heads.retina_head',
            'dense_heads.atss_head = toolbox_plugins.dense_heads.atss_head',
            'dense_heads.gfl_head = toolbox_plugins.dense_heads.gfl_head',
            'dense_heads.refinedet_head = toolbox_plugins.dense_heads.refinedet_head',
            'dense_heads.rpn_head = toolbox_plugins.dense_heads.rpn_head',
            'dense_heads.guided_anchor_head = toolbox_plugins.dense_heads.guided_anchor_head',
            'dense_heads.detr_head = toolbox_plugins.dense_heads.detr_head',
            'roi_heads.standard_roi_head = toolbox_plugins.roi_heads.standard_roi_head',
            'roi_heads.deform_roi_pool = toolbox_plugins.roi_heads.deform_roi_pool',
            'layers.detr_transformer = toolbox_plugins.layers.detr_transformer',
            'layers.attention = toolbox_plugins.layers.attention',
            'layers.stn = toolbox_plugins.layers.stn',
            'decode_heads.deeplab_head = toolbox_plugins.decode_heads.deeplab_head',
            'decode_heads.unetr_head = toolbox_plugins.decode_heads.unetr_head',
            'decode_heads.fcn_head = toolbox_plugins.decode_heads.fcn_head',
            'decode_heads.unet_head = toolbox_plugins.decode_heads.unet_head',
            'losses.focal_loss = toolbox_plugins.losses.focal_loss',
            'losses.box_losses = toolbox_plugins.losses.box_losses',
            'losses.cross_entropy = toolbox_plugins.losses.cross_entropy',
            'losses.long_tail = toolbox_plugins.losses.long_tail',
            'losses.dice = toolbox_plugins.losses.dice',
        ],
    },
)
