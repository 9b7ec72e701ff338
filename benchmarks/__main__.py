"""`python -m benchmarks [--quick] [--threads 1,2] [--models smollm2,1b,8b] [--out DIR]`"""
import sys

from .run import main

sys.exit(main())
