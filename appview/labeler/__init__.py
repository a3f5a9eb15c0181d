"""Our own labeler (appview/labeler/): its signing key and the `own_labels` write path."""
