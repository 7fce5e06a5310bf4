// Recently seen message ids, bounded: the oldest id is forgotten first.

export class RecentIds {
  // A Set iterates in insertion order, so its first entry is the oldest.
  private readonly ids = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** Records `id`; `false` when it was already there (a duplicate). */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      const oldest = this.ids.values().next().value as string;
      this.ids.delete(oldest);
    }
    return true;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  get size(): number {
    return this.ids.size;
  }
}
