"""volkd.experiment"""
