import PlexusCore
