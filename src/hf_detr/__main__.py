"""`python -m hf_detr COMMAND ...` is `hf-detr COMMAND ...` (e.g. `accelerate launch -m hf_detr train ...`)."""

import sys

from hf_detr.apps.cli import main

sys.exit(main())
