"""Shipping a trained model: export formats, their numeric check, the model card, the Hub push."""
