"""`python -m tests.support.fhir_server --port 0 --client-id X --client-secret Y`: serve."""

from tests.support.fhir_server.handler import serve

if __name__ == "__main__":
    serve()
