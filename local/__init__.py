"""The embedded run: a loopback stand-in for SageMaker hosting and the model container it serves."""
