// Module CNIInvoke.
