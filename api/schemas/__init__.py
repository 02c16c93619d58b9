"""Request and response schemas, one module per resource; they are the single description of each body
(flask-smorest validates requests with them and documents them in /openapi.json)."""
