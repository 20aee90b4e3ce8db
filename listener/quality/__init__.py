"""Detection quality: labelled data readers/writers, metrics, plots and ``listener evaluate``."""
