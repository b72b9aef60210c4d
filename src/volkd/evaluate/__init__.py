"""volkd.evaluate"""
