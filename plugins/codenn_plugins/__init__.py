"""codenn's built-in plugins: torchvision and timm splitters, and the built-in link factories.

Each module is an entry point in the ``codenn`` group of codenn's own pyproject, loaded exactly
like a third-party plugin.
"""
