"""Layer 1: the byte layouts of every VHDX structure, declared once with construct.

No I/O and no decisions here: parsing and building only. Bulk arrays (BAT, sector bitmaps) are
numpy, described by masks in ``bat.py``.
"""
