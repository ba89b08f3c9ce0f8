"""`i2t serve`: a local web page and JSON API over the shipped (or any) captioner, tagger and generator.

uploads.py (photo bytes -> RGB image, bounded like files), attention.py (a caption's attention map per word),
models.py (the models, loaded once and used under one lock), app.py (the FastAPI app and its error handlers),
page.html (the page: one file, no external resources). FastAPI is an optional extra (`pip install -e ".[serve]"`);
nothing here is imported by the rest of the library.
"""
