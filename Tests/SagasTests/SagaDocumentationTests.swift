// The saga definitions shown in docs/SAGAS.md, compiled and run, so the documentation cannot drift from the API.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

/// The bank the documentation's example talks to.
final class ExampleBank: Sendable {
    private let log = Locked<[String]>([])
    var entries: [String] { log.withLock { $0 } }

    func debit(_ account: String, _ amount: Int, key: String) async throws -> String {
        log.withLock { $0.append("debit \(account) \(amount) [\(key)]") }
        return "D-\(key)"
    }
    func refund(_ account: String, _ amount: Int, key: String) async throws {
        log.withLock { $0.append("refund \(account) \(amount) [\(key)]") }
    }
    func credit(_ account: String, _ amount: Int, memo: String, key: String) async throws -> String {
        log.withLock { $0.append("credit \(account) \(amount) \(memo)") }
        if account == "closed" { throw TestFailure(message: "account closed") }
        return "C-\(key)"
    }
    func reverse(_ reference: String, key: String) async throws {
        log.withLock { $0.append("reverse \(reference)") }
    }
}

@Suite(.timeLimit(.minutes(10))) struct SagaDocumentationTests {
    func definition(bank: ExampleBank) -> SagaDefinition<Transfer> {
        var transfer = SagaDefinition<Transfer>("transfer")
        let debit = transfer.step(
            "debit",
            options: StepOptions(
                retry: RetryPolicy(maximumAttempts: 5, initialBackoff: .milliseconds(200)), timeout: .seconds(10)),
            resources: { [$0.from] }
        ) { step in
            Receipt(reference: try await bank.debit(step.input.from, step.input.amount, key: step.idempotencyKey))
        } compensation: { step, receipt in
            try await bank.refund(step.input.from, step.input.amount, key: step.idempotencyKey)
        }
        transfer.step("credit", options: StepOptions(retry: .never), resources: { [$0.to] }) { step in
            let receipt = try step.output(of: debit)
            return Receipt(
                reference: try await bank.credit(
                    step.input.to, step.input.amount, memo: receipt.reference, key: step.idempotencyKey))
        } compensation: { step, receipt in
            if let receipt { try await bank.reverse(receipt.reference, key: step.idempotencyKey) }
        }
        return transfer
    }

    @Test func theDocumentedTransferCompletesOrRefunds() async throws {
        let bank = ExampleBank()
        let runner = SagaRunner(store: KeyValueEventStore(backend: InMemoryKeyValueStore()), clock: ManualSagaClock())
        let transfer = definition(bank: bank)
        try runner.register(transfer)
        #expect(try await runner.recover().isEmpty)
        let done = try await runner.start(
            transfer, id: try SagaID("transfer-42"), input: Transfer(from: "alice", to: "bob", amount: 100))
        #expect(done == .completed)
        let refunded = try await runner.start(
            transfer, id: try SagaID("transfer-43"), input: Transfer(from: "alice", to: "closed", amount: 5))
        #expect(refunded == .compensated(failedStep: "credit", error: "account closed"))
        #expect(
            bank.entries == [
                "debit alice 100 [transfer-42/debit/1]", "credit bob 100 D-transfer-42/debit/1",
                "debit alice 5 [transfer-43/debit/1]", "credit closed 5 D-transfer-43/debit/1",
                "refund alice 5 [transfer-43/debit/compensation/1]",
            ])
    }

    @Test func theDocumentedOrderReservesAndChargesInParallelThenShips() async throws {
        let shop = ExampleShop()
        let warehouse = shop, payments = shop, courier = shop
        var order = SagaDefinition<Order>("order")
        let (stock, payment) = order.inParallel { group in
            (group.step("reserve-stock", resources: { [$0.item] }) { step in
                try await warehouse.reserve(step.input.item, key: step.idempotencyKey)
            } compensation: { step, reservation in
                try await warehouse.release(step.input.item, key: step.idempotencyKey)
            },
             group.step("charge-card") { step in
                try await payments.charge(step.input.card, step.input.total, key: step.idempotencyKey)
            } compensation: { step, charge in
                if let charge { try await payments.refund(charge.id, key: step.idempotencyKey) }
            })
        }
        order.step("ship") { step in
            try await courier.ship(try step.output(of: stock), paidWith: try step.output(of: payment))
        }
        let runner = SagaRunner(store: KeyValueEventStore(backend: InMemoryKeyValueStore()), clock: ManualSagaClock())
        let outcome = try await runner.start(
            order, id: try SagaID("order-7"), input: Order(item: "lamp", card: "visa-1", total: 4_900))
        #expect(outcome == .completed)
        #expect(Set(shop.entries.prefix(2)) == ["reserve lamp", "charge visa-1 4900"])
        #expect(shop.entries.last == "ship R-lamp with C-visa-1")
    }
}

struct Order: Codable, Sendable {
    var item: String
    var card: String
    var total: Int
}

/// The warehouse, payment provider and courier of the documentation's order example, in one fake.
final class ExampleShop: Sendable {
    struct Reservation: Codable, Sendable { var id: String }
    struct Charge: Codable, Sendable { var id: String }
    struct Shipment: Codable, Sendable { var id: String }

    private let log = Locked<[String]>([])
    var entries: [String] { log.withLock { $0 } }

    func reserve(_ item: String, key: String) async throws -> Reservation {
        log.withLock { $0.append("reserve \(item)") }
        return Reservation(id: "R-\(item)")
    }
    func release(_ item: String, key: String) async throws {
        log.withLock { $0.append("release \(item)") }
    }
    func charge(_ card: String, _ total: Int, key: String) async throws -> Charge {
        log.withLock { $0.append("charge \(card) \(total)") }
        return Charge(id: "C-\(card)")
    }
    func refund(_ charge: String, key: String) async throws {
        log.withLock { $0.append("refund \(charge)") }
    }
    func ship(_ reservation: Reservation, paidWith charge: Charge) async throws -> Shipment {
        log.withLock { $0.append("ship \(reservation.id) with \(charge.id)") }
        return Shipment(id: "S-\(reservation.id)")
    }
}
