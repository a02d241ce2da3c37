"""`python -m scenectl ...` (and `torchrun -m scenectl train ...`) run the CLI."""

from scenectl.cli import main

if __name__ == "__main__":
    main()
