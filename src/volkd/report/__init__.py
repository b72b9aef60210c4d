"""volkd.report"""
