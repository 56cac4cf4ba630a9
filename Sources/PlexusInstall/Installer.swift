// Placeholder: the installer library (owned by the deployment work).
public enum PlexusInstall {}
