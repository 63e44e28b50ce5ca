import sys

from distill_doctor.cli import main

sys.exit(main())
