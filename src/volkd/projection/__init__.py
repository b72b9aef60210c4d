"""volkd.projection"""
