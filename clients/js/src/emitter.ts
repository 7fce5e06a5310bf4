// A minimal typed event emitter: handlers run synchronously, in the order
// they were added; one that throws does not stop the others.

type Handler<T> = (event: T) => void;

export class Emitter<Events extends object> {
  private readonly handlers = new Map<keyof Events, Set<Handler<never>>>();

  on<K extends keyof Events>(name: K, handler: Handler<Events[K]>): () => void {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    // Wrapped so that the same function added twice runs twice and each
    // unsubscribe removes its own registration.
    const entry: Handler<Events[K]> = (e) => handler(e);
    set.add(entry as Handler<never>);
    return () => {
      set!.delete(entry as Handler<never>);
    };
  }

  count<K extends keyof Events>(name: K): number {
    return this.handlers.get(name)?.size ?? 0;
  }

  /** Calls every handler of `name`; returns the errors they threw. */
  emit<K extends keyof Events>(name: K, event: Events[K]): unknown[] {
    const set = this.handlers.get(name);
    if (!set || set.size === 0) return [];
    const errors: unknown[] = [];
    for (const h of [...set]) {
      try {
        (h as Handler<Events[K]>)(event);
      } catch (e) {
        errors.push(e);
      }
    }
    return errors;
  }

  clear(): void {
    this.handlers.clear();
  }
}
