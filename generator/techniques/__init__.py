"""One module per technique, all with the shape of `base.Technique`; `registry` lists them."""
