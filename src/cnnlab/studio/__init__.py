"""`cnnlab studio`: train your own image classifier from the browser, on your own machine (issue 21).

>>> from cnnlab.studio.projects import check_name
>>> check_name("flowers", "project")
'flowers'
"""

from cnnlab.studio.projects import ProjectStore, StudioError, check_name

__all__ = ["ProjectStore", "StudioError", "check_name"]
