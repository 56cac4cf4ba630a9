// Module KubeClient.
