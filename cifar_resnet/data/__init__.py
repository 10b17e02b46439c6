"""The data pipeline: exact CIFAR-10 from its official files (`cifar10`), the GPU-resident loader with its
per-batch augmentation (`gpu_loader`, `auto_augment`), batch mixing (`mixing`), and users' own images
(`user_images`). Imports only `config` from the rest of the package.
"""
