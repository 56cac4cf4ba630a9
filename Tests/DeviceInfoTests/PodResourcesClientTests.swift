import Testing
@testable import DeviceInfo

private let second: Int64 = 1_000_000_000
private let ms: Int64 = 1_000_000
private let resource = Golden.resource

/// No jitter, so waits are exact: 100, 200, 400, 800, 1000, 1000, ... ms.
private let exact = PodResourcesPolicy(callTimeoutNanoseconds: 2 * second, baseDelayNanoseconds: 100 * ms,
                                       maxDelayNanoseconds: 1 * second, jitter: 0)

private func getAnswer(_ pod: PodResources?) -> [UInt8] { GetPodResourcesResponse(podResources: pod).encoded() }
private func listAnswer(_ pods: [PodResources]) -> [UInt8] { ListPodResourcesResponse(podResources: pods).encoded() }
private func status(_ code: Int, _ message: String) -> FakePodResourcesTransport.Step {
    .fail(PodResourcesCallError(.status(code), message))
}

private func run(
    _ t: FakePodResourcesTransport, _ clock: FakeClock, wanting: Set<String> = [resource], deadlineIn: Int64 = 10 * second,
    policy: PodResourcesPolicy = exact, client: PodResourcesClient? = nil
) -> (PodDevices?, PodResourcesError?, PodResourcesClient) {
    let c = client ?? PodResourcesClient(transport: t, policy: policy, clock: clock, jitterSeed: 1)
    do {
        let d = try c.podDevices(namespace: "default", name: "sriov-pod", wanting: wanting,
                                 deadline: clock.now() + deadlineIn)
        return (d, nil, c)
    } catch {
        return (nil, error, c)
    }
}

@Suite struct PodResourcesClientTests {
    @Test func getIsPreferredAndSendsTheGoldenRequest() throws {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([.answer(getAnswer(Golden.sriovPod))], clock: clock)
        let (d, e, c) = run(t, clock)
        #expect(e == nil)
        #expect(d?.deviceIDs(for: resource) == ["0000:03:02.0", "0000:03:02.3"])
        #expect(t.calls.count == 1)
        #expect(t.calls[0].path == "/v1.PodResourcesLister/Get")
        #expect(GRPCFraming.frame(t.calls[0].message) == Golden.getRequestFrame)
        #expect(t.calls[0].timeout == 2 * second)
        #expect(c.usesList == false)
        #expect(clock.sleeps.isEmpty)
    }

    @Test(arguments: [
        (12, "unknown method Get for service v1.PodResourcesLister"),
        (2, "PodResources API Get method disabled"),
    ])
    func getUnavailableFallsBackToListAndStaysThere(code: Int, message: String) throws {
        let clock = FakeClock()
        let list = try GRPCFraming.unframe(Golden.listResponseFrame)
        let t = FakePodResourcesTransport([status(code, message), .answer(list)], clock: clock)
        let (d, e, c) = run(t, clock)
        #expect(e == nil)
        #expect(d?.deviceIDs(for: resource) == ["0000:03:02.0", "0000:03:02.3"])
        #expect(t.calls.map(\.path) == ["/v1.PodResourcesLister/Get", "/v1.PodResourcesLister/List"])
        #expect(t.calls[1].message == [])
        #expect(clock.sleeps.isEmpty)
        #expect(c.usesList)
        // The same client goes straight to List next time.
        _ = run(t, clock, client: c)
        #expect(t.calls.map(\.path).last == "/v1.PodResourcesLister/List")
        #expect(t.calls.count == 3)
    }

    @Test(arguments: [
        (5, "pod not found"),
        (2, "pod sriov-pod in namespace default not found"),
    ])
    func podNotThereYetIsRetriedWithBackoff(code: Int, message: String) throws {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([status(code, message), .answer(getAnswer(nil)), status(code, message),
                                           .answer(getAnswer(Golden.sriovPod))], clock: clock)
        let (d, e, _) = run(t, clock)
        #expect(e == nil)
        #expect(d?.deviceIDs(for: resource).count == 2)
        #expect(t.calls.count == 4)
        #expect(clock.sleeps == [100 * ms, 200 * ms, 400 * ms])
    }

    @Test func podWithoutWantedDevicesIsRetriedUntilTheyAppear() throws {
        let clock = FakeClock()
        let bare = PodResources(name: "sriov-pod", namespace: "default", containers: [ContainerResources(name: "app")])
        let t = FakePodResourcesTransport([.answer(getAnswer(bare)), .answer(getAnswer(Golden.sriovPod))], clock: clock)
        let (d, e, _) = run(t, clock)
        #expect(e == nil)
        #expect(d?.deviceIDs(for: resource).count == 2)
        #expect(clock.sleeps == [100 * ms])
        // With nothing wanted, a pod without devices is an answer.
        let t2 = FakePodResourcesTransport([.answer(getAnswer(bare))], clock: clock)
        let (d2, e2, _) = run(t2, clock, wanting: [])
        #expect(e2 == nil && d2?.isEmpty == true && t2.calls.count == 1)
    }

    @Test func deadlineEndsTheWaitWithATypedError() throws {
        let clock = FakeClock()
        let start = clock.now()
        let bare = PodResources(name: "sriov-pod", namespace: "default", containers: [ContainerResources(name: "app")])
        let t = FakePodResourcesTransport([.answer(getAnswer(bare))], clock: clock)
        let (_, e, _) = run(t, clock, wanting: [resource, "intel.com/other"], deadlineIn: 3 * second)
        let err = try #require(e)
        #expect(err.kind == .noDevices(["intel.com/intel_sriov_netdevice", "intel.com/other"]))
        #expect(err.attempts == t.calls.count)
        #expect(t.calls.count == 6)  // waits 100+200+400+800+1000 ms, then the next wait would pass the deadline
        #expect(clock.now() - start <= 3 * second)
        #expect(err.isTransient)
        #expect(err.description == #"kubelet PodResources for pod default/sriov-pod: no device of "#
            + #""intel.com/intel_sriov_netdevice", "intel.com/other" allocated to the pod [after 6 calls]"#)
    }

    @Test func podAbsentFromListUntilTheDeadline() throws {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([status(12, "unknown method"), .answer(listAnswer([Golden.plainPod]))],
                                          clock: clock)
        let (_, e, _) = run(t, clock, deadlineIn: 1 * second)
        let err = try #require(e)
        #expect(err.kind == .podNotFound)
        #expect(err.detail == "not in the List answer (1 pods)")
        #expect(t.calls.dropFirst().allSatisfy { $0.path == "/v1.PodResourcesLister/List" })
        #expect(err.description.hasPrefix("kubelet PodResources for pod default/sriov-pod: pod not known to the kubelet"))
    }

    @Test func rateLimitIsRetried() throws {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([status(8, "rejected by rate limit"), status(8, "rejected by rate limit"),
                                           .answer(getAnswer(Golden.sriovPod))], clock: clock)
        let (d, e, _) = run(t, clock)
        #expect(e == nil && d != nil)
        #expect(t.calls.count == 3)
        let always = FakePodResourcesTransport([status(8, "rejected by rate limit")], clock: clock)
        let (_, e2, _) = run(always, clock, deadlineIn: 500 * ms)
        #expect(e2?.kind == .rateLimited)
    }

    @Test func jitterStaysWithinBounds() throws {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([status(8, "rejected by rate limit")], clock: clock)
        let policy = PodResourcesPolicy(baseDelayNanoseconds: 100 * ms, maxDelayNanoseconds: 1 * second, jitter: 0.5)
        _ = run(t, clock, deadlineIn: 5 * second, policy: policy)
        for (i, s) in clock.sleeps.enumerated() {
            let full = min(1 * second, (100 * ms) << Int64(i))
            #expect(s <= full && s >= full / 2)
        }
    }

    static let fatal: [(PodResourcesCallError, PodResourcesError.Kind)] = [
        (PodResourcesCallError(.socketAbsent, "no socket /var/lib/kubelet/pod-resources/kubelet.sock"), .socketAbsent),
        (PodResourcesCallError(.connection, "Couldn't connect to server"), .call(.connection)),
        (PodResourcesCallError(.timeout, "Operation timed out"), .call(.timeout)),
        (PodResourcesCallError(.status(7), "permission denied"), .call(.status(7))),
        (PodResourcesCallError(.status(2), "some other failure"), .call(.status(2))),
        (PodResourcesCallError(.invalidResponse, "HTTP 415"), .call(.invalidResponse)),
        (PodResourcesCallError(.setup, "libcurl without HTTP/2"), .call(.setup)),
    ]

    @Test(arguments: fatal)
    func failuresThatAreNotRetried(failure: PodResourcesCallError, kind: PodResourcesError.Kind) {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([.fail(failure)], clock: clock)
        let (_, e, _) = run(t, clock)
        #expect(e?.kind == kind)
        #expect(e?.attempts == 1)
        #expect(t.calls.count == 1)
        #expect(clock.sleeps.isEmpty)
        #expect(e?.description.contains(failure.message) == true)
    }

    @Test func undecodableOrForeignAnswersAreErrors() {
        let clock = FakeClock()
        let garbage = FakePodResourcesTransport([.answer([0x0a, 0x05, 0x01])], clock: clock)
        #expect(run(garbage, clock).1?.kind == .invalidResponse)
        let other = PodResources(name: "other", namespace: "default")
        let foreign = FakePodResourcesTransport([.answer(getAnswer(other))], clock: clock)
        let e = run(foreign, clock).1
        #expect(e?.kind == .invalidResponse)
        #expect(e?.detail.contains("default/other") == true)
    }

    @Test func callTimeoutIsCutToTheTimeLeft() {
        let clock = FakeClock()
        let t = FakePodResourcesTransport([.answer(getAnswer(Golden.sriovPod))], clock: clock)
        _ = run(t, clock, deadlineIn: 300 * ms)
        #expect(t.calls[0].timeout == 300 * ms)
        let late = FakePodResourcesTransport([.answer(getAnswer(Golden.sriovPod))], clock: clock)
        let e = run(late, clock, deadlineIn: 0).1
        #expect(e?.kind == .call(.timeout))
        #expect(late.calls.isEmpty)
    }

    @Test func listMergesDuplicateEntriesOfThePod() throws {
        let clock = FakeClock()
        let older = PodResources(name: "sriov-pod", namespace: "default", containers: [
            ContainerResources(name: "app", devices: [ContainerDevices(resourceName: resource, deviceIDs: ["0000:03:02.0"])]),
        ])
        let t = FakePodResourcesTransport([status(12, ""), .answer(listAnswer([older, Golden.plainPod, Golden.sriovPod]))],
                                          clock: clock)
        let (d, _, _) = run(t, clock)
        #expect(d?.deviceIDs(for: resource) == ["0000:03:02.0", "0000:03:02.3"])
    }
}
