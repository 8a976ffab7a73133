"""The live loop: served traffic replayed (``replay``), late labels (``outcomes``), the promotion
gate of a challenger against the serving champion (``gate``)."""
