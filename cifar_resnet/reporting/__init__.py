"""What a reader sees: the recorded runs and their tables (`records`), what the figures show (`analysis`)
and how they are drawn (`plots`, `run_plots`), every figure and table rebuilt from the records (`rebuild`),
the paper's numbers and build (`paper`, `paper_bench`, `paper_macros`, `recipe_text`), the presets' training
times (`preset_times`) and the repository's address (`address`). The top layer: imports any layer below.
"""
