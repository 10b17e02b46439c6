"""`python -m cifar_resnet` is the `cifar-resnet` command."""

from .cli import main

raise SystemExit(main())
