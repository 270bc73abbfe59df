"""lab: a lab file → the validated, immutable model it describes; never touches the kernel.

The way in is netlab.load.load_lab (parse → expand → the cross-object checks); the modules
here are its parts, and the model (model.py) is what every later step reads.
"""
