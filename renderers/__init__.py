"""Text → page images. Pure CPU: numpy, Pillow, freetype-py, tokenizers. Never imports torch or optimem."""
