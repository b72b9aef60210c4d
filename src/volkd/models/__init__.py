"""volkd.models"""
