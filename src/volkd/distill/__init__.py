"""volkd.distill"""
