"""Reading fastai exports without running their pickled code."""
