"""The cluster: several h5gate nodes serve one set of cameras, sharing their state through one Redis.

conf.py says where Redis is and who this node is; link.py keeps the connection up; service.py is the
object on Services (`services.cluster`) that the API and the other chapters use.
"""
