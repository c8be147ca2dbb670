import { LRUCache } from 'lru-cache'

/**
 * An LRU of at most `entries` entries whose storage grows as it fills. lru-cache's
 * `max` allocates every slot up front: for our caches that was ~60 ms of start-up
 * and ~8 MB of heap before the first request. The same bound as a size of one per
 * entry allocates nothing ahead.
 */
export function createLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(
  entries: number,
  options: Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'> = {},
): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: entries, sizeCalculation: () => 1 } as LRUCache.Options<K, V, unknown>)
}
