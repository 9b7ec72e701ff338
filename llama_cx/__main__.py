"""`python -m llama_cx` = the `llama-cx` console."""
import sys

from .cli import main

sys.exit(main())
