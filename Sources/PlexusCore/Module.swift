// Module PlexusCore.
