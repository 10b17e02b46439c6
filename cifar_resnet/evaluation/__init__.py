"""A network in inference: test-time views, predictions and a run's saved weights (`evaluate`), predictions
for users' images (`predict_images`), and accuracy under generated corruptions (`corruptions`, written to
`robustness_record`'s file). Imports `config`, `runtime`, `models`, `run_folder`, `formats` and `data`; never
`training` or above.
"""
