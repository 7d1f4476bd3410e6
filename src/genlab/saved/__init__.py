"""What a saved model depends on, shared by the stage that saves it and the stages that load it.

One module per saved model that a later stage reads: the config it was made under (stored with the
weights by ``genlab.io.save_model`` and checked again by ``load_model``) and the format of what is
stored beside the weights.
"""
