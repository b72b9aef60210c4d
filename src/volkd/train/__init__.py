"""volkd.train"""
