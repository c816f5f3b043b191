"""`python -m ollama_keepwarm` runs the same CLI as the console script."""

import sys

from ollama_keepwarm.cli import main

sys.exit(main())
