import XCTest
@testable import PlexusInstall

final class InstallerPlaceholderTests: XCTestCase {
    func testPlaceholder() {}
}
